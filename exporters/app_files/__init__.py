"""What goes to app developers besides the files themselves: the metadata every file carries
(metadata.py, tflite_metadata.py: the standard TFLite metadata), golden vectors for the app's own
on-device tests (golden.py) and the model card (model_card.py)."""
