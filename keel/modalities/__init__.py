"""The kinds of data Keel reads, checks, trains on and scores: one small set of roles
(keel.modalities.base.Modality) with one implementation per kind."""
