"""Generation: the model catalog, jobs and their lifecycle, upload
validation, pricing, the pages and the JSON API for jobs. Imports billing;
never workers/ (work is sent by task name, generation.dispatch) and never
torch or diffusers."""
