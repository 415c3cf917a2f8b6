"""``python -m sonar_bulk`` runs the command-line interface."""

from sonar_bulk.cli import main

main()
