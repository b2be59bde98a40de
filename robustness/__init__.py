"""The reliability campaign: a generated corpus of bad inputs (corpus.py) and its runner (campaign.py)."""
