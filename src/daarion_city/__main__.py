import sys

from daarion_city.cli import main

sys.exit(main())
