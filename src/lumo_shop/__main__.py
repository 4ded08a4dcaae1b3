"""`python -m lumo_shop` runs the demo backend's command line (as `lumo-shop` does)."""

from lumo_shop.cli import main

main()
