"""`python -m retina.figures svgs`: write the README's figures to `svgs/` (see `retina.figures.svgs`)."""

import sys

from retina.figures.svgs import main

sys.exit(main())
