"""DICOM network services (pynetdicom): C-ECHO and C-STORE, routed by called AE title."""
