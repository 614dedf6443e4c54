#!/usr/bin/env python
"Create experiments/finetuning/NAME/config.yaml: `python experiments/generate_finetuning_experiment.py -f NAME -p PRE`."
import sys
from txc.cli import generate_finetuning_main

if __name__ == '__main__': sys.exit(generate_finetuning_main())
