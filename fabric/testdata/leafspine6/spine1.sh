# romana fabric routes for device spine1 (spine): 1 route(s) (1 ECMP)
ip route replace fd00:10::/52 proto static nexthop via fd00:ff::1 nexthop via fd00:ff::3  # rack=r1 via tor1
