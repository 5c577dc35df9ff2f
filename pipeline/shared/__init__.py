"""What the worker and the model must agree on, and nothing else: the label set, how evidence fuses
and merges, the wire's sample rate. numpy only: both houses import it, it imports neither."""
