"""kdoctor on every node of a cluster, on Kubernetes itself (issue 13).

``manifest``    the objects ``kdoctor fleet`` applies (``kdoctor manifest`` prints them)
``agent``       what runs in each agent pod: reads its host through /host, measures
                ``cluster.node-ports`` towards the targets fleet hands it, answers with a bundle
``reachability`` TCP connect outcomes told apart: open, refused, prohibited, timeout
``orchestrate`` ``kdoctor fleet``: apply, wait, gather over exec, clean up
"""
