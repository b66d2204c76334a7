"""The words, at the very bottom: translations, `Message` (a sentence in any language) and display text.

Imports nothing of the package above it and no heavy library, so the record and every layer can say things.
"""
