"""Presence: online / away / offline per user, across tabs, devices and instances."""
