"""The `coterie` command line: node, nodetool, waltool and friends, wired on top of the
actors, wal, membership and consensus packages."""
