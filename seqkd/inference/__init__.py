"""Using a model: translation (CTranslate2 / HF), evaluation, decoding speed, shortlists, the int8 export."""
