import sys

from cartd.cli import main

sys.exit(main())
