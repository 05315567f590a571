"""Membership-inference audit of a finished run: what an attacker learns from the global model
or from one hospital's update, with and without differential privacy."""
