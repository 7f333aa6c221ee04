"""Readers and writers of the file formats users bring, shared by every learner that reads them.

One module per format family: ``grid`` (GeoTIFF and NetCDF rasters with their coordinates, units and
nodata), ``gslib`` (GSLIB / GEO-EAS grids and tables), ``stations`` (station tables: CSV or NetCDF
with a station dimension). Each reader raises :class:`~geostudy.errors.DataError` naming the file and
the key on bad input, never a traceback.
"""
