"""Experiments built from training runs: resumable cells (:mod:`.runner`), the demo
(:mod:`.demo`), the paper's ablation tables (:mod:`.ablate`) and their arithmetic (:mod:`.stats`)."""
