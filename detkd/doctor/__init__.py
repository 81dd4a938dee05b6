"""``detkd doctor``: before hours of training, whether this teacher can teach this student, and
which term drives the gradient.

On a few batches of the config's training split, with the teacher and the student as the config
builds them (or a student checkpoint), it measures:

- **teacher competence** (:mod:`.probes`): the teacher's AP50 on the sampled images; on the
  student's sampled RoIs its probability of the true class, its accuracy and how often its
  argmax is background, and its background probability on negatives; how well its RPN
  objectness separates positive from negative anchors (AUC, on its own anchors);
- **alignment**: the level pairing, the share of the student's sampled anchors that found a
  teacher anchor, and whether the teacher scores ground-truth boxes mapped through the
  distillation code as it scores them found independently in its own frame;
- **balance** (:mod:`detkd.distill.balance`, which distillation runs use too): each term's raw
  and weighted value and its share of the gradient norm on the student's backbone, FPN, RPN and
  RoI head (one ``autograd.grad`` per term), and the share of the teacher maps' variance that is
  a per-channel constant (a hint a bias fits for free);

then (:mod:`.advice`) verdicts and advice, each naming a config key and the number behind it.
"""
