"""Where a check's facts come from: the live host or a bundle (node), the API or a bundle
(cluster), and ``collect``, which writes a bundle from the live sources."""
