"""The study's benchmarks, shipped with the plugin so an installed copy can run them.

`pytest --pyargs ohlora_fixtures.benchmarks --benchmark-autosave` (or `ohlora-bench`, which adds the
autosave) runs them from any folder; in a checkout, `pytest benchmarks` runs the same tests through the
thin files in benchmarks/, which import them from here.
"""
