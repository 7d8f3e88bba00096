"""`python -m dualvec`: the same command line as the `dualvec` script."""

from dualvec.cli.main import main

main()
