-- The sync back to OMi has a lane of its own (SQLite: store migration 13): a gateway that answers
-- late holds no lane of the command, program and web subscribers. Its open deliveries move there.
UPDATE subscriber_events SET lane = 'omi'
 WHERE lane = 'actions' AND subscriber_id IN (SELECT id FROM subscribers WHERE action = 'omi');
