"""Lets `python -m rnngen` (and `torchrun -m rnngen`) run the command line."""

from rnngen.cli import main

if __name__ == "__main__":
    main()
