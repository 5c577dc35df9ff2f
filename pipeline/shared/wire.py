"""The tensors' units on the wire between the worker and the `emotion` model."""

SAMPLE_RATE = 16_000   # Hz of every AUDIO / VOICE_WINDOW tensor: the worker decodes to it, the model assumes it
