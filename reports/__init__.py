"""Tables, plots and report builders over a run's results store."""
