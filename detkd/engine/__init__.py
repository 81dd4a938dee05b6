"""The training engine: data loaders, the loop, checkpoints, schedules, inference, torchrun.

- :func:`~detkd.engine.trainer.train` (``detkd train``) and :class:`~detkd.engine.trainer.Trainer`;
- :class:`~detkd.engine.task.TrainTask`, :class:`~detkd.engine.task.DetectorTask`: what is trained;
- :func:`~detkd.engine.checkpoint.rng_state` / :func:`~detkd.engine.checkpoint.set_rng_state`: the
  generator states a checkpoint saves (checkpoint files themselves: :mod:`detkd.utils.checkpoint`);
- :func:`~detkd.engine.inference.predict`, :func:`~detkd.engine.inference.evaluate_model`,
  :func:`~detkd.engine.inference.evaluate_checkpoint` (``detkd eval``).

Modules are imported on use (``from detkd.engine.trainer import train``) so that importing
``detkd.engine`` stays cheap.
"""
