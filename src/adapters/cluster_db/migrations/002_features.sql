-- The feature keys each machine holds (`featurekey`), as it last reported them: the
-- features on for it now (antivirus, outbreak, dlp); NULL before its first report.
ALTER TABLE pvo_cluster.machine ADD COLUMN features text[];
