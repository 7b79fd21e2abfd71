"""``python -m greenllm``: the same as the ``greenllm`` command."""

import sys

from greenllm.cli import main

sys.exit(main())
