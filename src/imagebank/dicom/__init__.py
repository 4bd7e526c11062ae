"""DICOM reading and writing: what the index needs from a header, validation of received files."""
