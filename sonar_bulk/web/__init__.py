"""``sonar-bulk ui``: a local web page over the same library as the CLI."""
