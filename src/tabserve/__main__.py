import sys

from tabserve.cli import main

sys.exit(main())
