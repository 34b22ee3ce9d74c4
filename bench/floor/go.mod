module rollout-webhook/bench/floor

go 1.22
