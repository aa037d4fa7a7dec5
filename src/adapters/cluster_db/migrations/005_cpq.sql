-- What each machine holds of its enrollment on a manager (`core::cpq::enrollment`, as
-- JSON: its CPQ id, the CN of its CPQ certificate, the CA and pinned manager it has), as it
-- last reported it; NULL before its first report. Enabling centralization at a level
-- names every machine of that level not added on the manager.
ALTER TABLE pvo_cluster.machine ADD COLUMN cpq text;
