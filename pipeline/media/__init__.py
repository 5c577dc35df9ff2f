"""Media: probing, decoding and cutting with ffmpeg, and the pure segment arithmetic."""
