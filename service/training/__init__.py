"""Offline trainer: manifest -> trained, evaluated, versioned model artifact."""
