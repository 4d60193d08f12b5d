"""Sweeps: grids of Online Normalization training runs on Ray Tune.

- :mod:`sweeps.spec` reads and checks a sweep spec (YAML) and expands it into trial configs;
- :mod:`sweeps.run` runs, resumes and summarizes a sweep (``Tuner``, ``Tuner.restore``);
- :mod:`sweeps.trainable` is the trial: one :func:`onlinenorm.train.run` reporting to Tune;
- :mod:`sweeps.prepare` readies the dataset once per node;
- :mod:`sweeps.status` counts trial states from an experiment directory's files;
- :mod:`sweeps.bench` measures what running trials through Ray Tune costs;
- :mod:`sweeps.cli` is ``onlinenorm sweep``.

Nothing is imported here, so ``import sweeps.cli`` stays light.
"""
