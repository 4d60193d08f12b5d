"""Sweeps: grids of Online Normalization training runs on Ray Tune.

- :mod:`sweeps.spec` reads and checks a sweep spec (YAML) and expands it into trial configs;
- :mod:`sweeps.run` runs, resumes and summarizes a sweep (``Tuner``, ``Tuner.restore``);
- :mod:`sweeps.search` checks the ``search:``/``space:`` sections and draws random points;
  :mod:`sweeps.searchers` builds the Ray Tune searchers (``BasicVariantGenerator``, ``OptunaSearch``);
- :mod:`sweeps.tracking` checks the ``tracking:`` section; :mod:`sweeps.callbacks` builds Ray's
  MLflow and W&B logger callbacks;
- :mod:`sweeps.trainable` is the trial: one :func:`onlinenorm.training.train.run` reporting to Tune;
- :mod:`sweeps.prepare` readies the dataset once per node;
- :mod:`sweeps.status` counts trial states from an experiment directory's files;
- :mod:`sweeps.bench` measures what running trials through Ray Tune costs;
- :mod:`sweeps.cli` is ``onlinenorm sweep``.

Nothing is imported here, so ``import sweeps.cli`` stays light.
"""
