#!/usr/bin/env python
"Train an experiment: `python train.py -n NAME -m pretraining|finetuning` (see txc.experiments.train_experiment)."
import sys
from txc.cli import train_main

if __name__ == '__main__': sys.exit(train_main())
