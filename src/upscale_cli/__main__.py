"""`python -m upscale_cli` runs the same app as the `upscale` command."""
from upscale_cli.cli import main

if __name__ == "__main__":
    main()
