"""`python -m xfads_cli` runs the CLI (this is also what torchrun launches)."""

from xfads_cli.cli import main

if __name__ == "__main__":
    main()
