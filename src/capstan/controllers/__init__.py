"""Controllers: level-triggered reconcile loops over a Store, one per kind."""
