"""City rooms: public rooms, their messages (per-room ``seq``), membership and live sockets."""
