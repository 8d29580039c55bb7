"""Teacher service: scores student responses with a teacher's top-K log-probs (see docs/services.md).

Kinds (``config.TeacherConfig``, discriminated by ``kind``): self_ema, self_frozen,
external, black_box. ``support.check_teacher_objective`` rejects unsupported combinations.
"""
