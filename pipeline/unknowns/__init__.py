"""Unknown visitors: tracks that end unknown are kept, clustered across cameras and days, and can be named once
(enrolling the person and filing their past tracks under the name), merged, ignored or deleted. Also the
"wrong person" correction and the negative examples it leaves for the decision rule."""
