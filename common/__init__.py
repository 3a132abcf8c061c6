"""Plumbing every deployable shares, standard library only: settings read from the environment
(`common.settings`) and the one JSON log line format (`common.logs`). Imports nothing of ours."""
