// Placeholder: the dashboard's script comes with the frontend.
"use strict";
