"""Numbers from the tables: channel statistics, top-k images, a run's channel ranking, and the re-run of the images a
report shows. Imports data, model and store."""
