#!/usr/bin/env python
"Create experiments/pretraining/NAME/config.yaml: `python experiments/generate_pretraining_experiment.py -p NAME [-rp OLD]`."
import sys
from txc.cli import generate_pretraining_main

if __name__ == '__main__': sys.exit(generate_pretraining_main())
