"""`python -m lmforge` (what `torchrun -m lmforge train RECIPE` runs on every rank): the `lmforge` command."""

from lmforge.cli.main import main

if __name__ == "__main__":
    main()
