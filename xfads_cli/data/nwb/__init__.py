"""Reading NWB files: `load_nwb` bins the units into trials (`SpikeData`), `load_nwb_recording` keeps
a session without trials as spike times, `describe_nwb` summarises a file for `xfads inspect`.

Spike times come from the units table, trials from an interval table ('trials' or any
/intervals/<name>) or, without one, from fixed windows chopped out of the whole recording.

    opening.py        open a local or remote file; pynwb's failures as one-line BadFile errors
    columns.py        table columns as numpy (one value per row, text decoded)
    units.py          the units table: spike times checked, the data.units selection, held-out neurons
    query.py          the data.units selection language ('quality == "good"', 'snr > 3', 'not noise')
    windows.py        where the trials are: aligned / own-length / shortest windows, or chopped ones
    trial_columns.py  condition labels and event times of the loaded trials
    series.py         behaviour TimeSeries onto the bins, and the ground truth of simulated files
    describe.py       the `xfads inspect` summary and the suggested bin size
    load.py           read_nwb and read_nwb_recording of an open file (data/opened.py), putting the
                      above together; load_nwb and load_nwb_recording open the file themselves
"""

from xfads_cli.data.nwb.describe import describe_nwb, suggest_bin_ms
from xfads_cli.data.nwb.load import load_nwb, load_nwb_recording, read_nwb, read_nwb_recording

__all__ = ["describe_nwb", "load_nwb", "load_nwb_recording", "read_nwb", "read_nwb_recording", "suggest_bin_ms"]
