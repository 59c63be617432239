"""Ray jobs of rayseq: data sources, featurizers, length bucketing, the training driver
and worker loop, evaluation and checkpoint export."""
