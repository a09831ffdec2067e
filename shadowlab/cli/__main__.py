import sys

from shadowlab.cli import main

sys.exit(main())
