//! Images: decoding, PIL-exact resampling and the image processors (placeholder: being implemented).
