import os
import sys

import muslin

# `python -m muslin` puts the current directory first on the path. muslin itself was found
# elsewhere (or it is this directory's own checkout): take the directory off again, so that
# a module planted there (pyroute2.py in /tmp, say) is not what muslin imports later, as root.
if sys.path and sys.path[0] == os.getcwd() != os.path.dirname(os.path.dirname(os.path.abspath(muslin.__file__))):
    del sys.path[0]

from muslin.frontends.cli import main  # noqa: E402 - after the path is cleaned

raise SystemExit(main())
