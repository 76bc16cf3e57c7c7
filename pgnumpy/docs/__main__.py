"""python -m pgnumpy.docs --out DIR: build the reading site into DIR."""

import sys

from pgnumpy.docs.build import main

if __name__ == "__main__":
    sys.exit(main())
